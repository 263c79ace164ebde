"""``zeroclick_balance``, ``zeroclick_assign``, ``zeroclick_routes``."""
