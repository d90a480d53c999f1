"""kofin.eval"""
