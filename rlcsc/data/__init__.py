"""Data stages: download (checksummed raw images)."""
