"""lightning_redd.metrics"""
