"""The traffic interface: read and steer the proxy in front of an app, embedded or HAProxy.

`base` holds the driver interface and the state it reports, `drivers.open_driver` opens the one a
config names. This package re-exports nothing: its modules import each other, and a package that
imported them back would close an import circle.
"""
