"""The projects service: projects and their non-destructive edit history."""
