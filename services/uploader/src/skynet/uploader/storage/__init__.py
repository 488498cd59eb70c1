"""Storage backends behind one interface; see base.py and registry.py."""
