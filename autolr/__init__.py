"""autolr."""
