"""Learning agents and their networks (DQN and variants); they know nothing of Hydra."""
