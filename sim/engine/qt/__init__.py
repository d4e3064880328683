"""The Qt layer of the model: QTimer, QTcpServer and QTcpSocket on top of the simulated kernel.

``qtimer`` (application timers), ``qtcpserver`` and ``qabstractsocket`` (which system calls
each Qt call makes, each rule citing qtbase), ``loop`` (the objects of each process and its
event loop). See docs/qt.md.
"""
