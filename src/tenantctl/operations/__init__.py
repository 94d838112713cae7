"""What the commands do, free of any CLI concern (the CLI and `apply` share it)."""
