"""The embedded default store: objects, versions, locks and digests in one SQLite file.

``database`` is the file, its schema and its sync discipline; ``store`` the object
store on it; ``pieces`` the path of large states (uploads and pieces); ``locks``
the lock table. The registry opens ``store`` and ``locks`` by the sqlite:// scheme.
"""
