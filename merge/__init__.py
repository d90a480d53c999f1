"""kofin.merge"""
