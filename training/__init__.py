"""kofin.training"""
