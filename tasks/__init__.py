"""Taskplane's Celery side: the app factory, the job-type registry and the job families.

``celery -A tasks`` finds the app in ``tasks/celery.py``; importing this
package builds nothing, so the web can read the registry without a worker.
"""
