"""One module per outside system; the only code here that does I/O."""
