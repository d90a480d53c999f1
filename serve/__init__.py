"""kofin.serve"""
