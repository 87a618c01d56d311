"""Backends shipped inside chainette-core, registered as default plugins."""
