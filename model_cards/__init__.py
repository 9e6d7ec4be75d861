"""Model-card templates (shipped as package data ``steering_adapter.model_cards``)."""
