"""The tray's link to the service: the caller-aware channel (Unix socket, named pipe), ChannelControl,
and the tray as a supervised child process.
"""
