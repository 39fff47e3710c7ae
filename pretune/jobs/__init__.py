"""The jobs behind the commands, one module each: ``fit``, ``predict`` (eval and predict), ``estimate``,
``run`` (the whole job under a budget) and ``demo``. Each orchestrates the stages below it; none parses argv
or sets up logging (``pretune.cli`` does)."""
