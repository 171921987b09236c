"""lightning_redd.solvers"""
