"""lightning_redd.lit"""
