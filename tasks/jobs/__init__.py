"""The job families, one package each; they never import each other (make lint checks it)."""
