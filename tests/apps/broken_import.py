"""An app module that raises while being imported."""

raise RuntimeError("this module cannot be imported")
