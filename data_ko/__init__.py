"""kofin.data_ko"""
