"""The web console: GOV.UK Design System pages that talk to the services over NATS like any other client."""
