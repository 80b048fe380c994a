"""The ``gcln`` command line: one module per subcommand (``demo``, ``train-classifier``, ``train``,
``eval``), and :mod:`.main`, the dispatcher. Entry points live here so that the domain packages
(``gcln_fast.gcln``, ``.evaluation``, ``.training``, ...) import only downward."""
