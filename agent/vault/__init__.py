"""What the core keeps on disk: durable files, the machine key (DPAPI or 0600), the sealed and
type-checked state, the tamper marks outside the data dir, and what earlier installs left on this PC.
"""
