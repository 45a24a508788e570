"""logs.summarize: stream a log and count what is in it."""
