"""webhook.deliver: POST a JSON body to a URL, retrying what a server asks us to retry."""
