"""tenantctl: provision, operate and verify isolated tenants."""

__version__ = "0.1.0"
