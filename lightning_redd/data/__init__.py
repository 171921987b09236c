"""lightning_redd.data"""
