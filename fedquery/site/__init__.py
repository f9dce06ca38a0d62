"""A site: its data (through an engine adapter), its policy, its fragment, its protection."""
