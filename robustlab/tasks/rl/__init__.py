"""Reinforcement learning as a task plug-in: Gymnasium classic-control environments, Stable-Baselines3
PPO and DQN agents, and per-step observation attacks from the shared engine.

The attacked "model" is the agent's policy network read as a classifier over actions (PPO: the action
logits; DQN: the Q-values as logits), its "label" the clean greedy action. Gymnasium and
Stable-Baselines3 are imported only when an environment or agent is built (``pip install -e ".[rl]"``).
"""
