"""kdumpd: a systemd-native kernel crash dump stack (arming, D-Bus API, capture engine)."""

__version__ = "0.1.0"
