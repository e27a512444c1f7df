"""The data stages: download (checksummed raw images), augment (Y variants), patch (training pairs)."""
