"""Occupant monitoring: in-cabin driver state, retrained federated so that cabin frames never leave the car."""
