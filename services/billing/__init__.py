"""The billing service: Stripe subscriptions, usage counters and quota reservations."""
