"""Development: the defaults, with every job family including diagnostics."""

from celeryconfig import *  # noqa: F403

taskplane_environment = "development"
