"""Reports over the JSON-lines audit log (``reaper-manage audit-log``).

``read`` streams records out of one or several files (rotated siblings in
chronological order, ``.gz`` transparently, malformed lines counted); ``reports``
folds a stream of records into a summary, the story of one instance or resource,
or the failures, each renderable as a table or JSON.
"""
