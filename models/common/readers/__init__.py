"""Dataset readers, one module per dataset; the interface: models/common/episodes.py."""
