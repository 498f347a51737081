"""The assets service: images in object storage, validated by their content."""
