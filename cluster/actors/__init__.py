"""Ray wrappers: encoder and coordinator actors, and the options they run with."""
