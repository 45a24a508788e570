"""email.send: deliver a message over SMTP."""
