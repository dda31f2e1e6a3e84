"""The service host and its OS: the Windows service POSPalAgent, the DACLs it applies, the Windows
support matrix, and the Linux system service.
"""
