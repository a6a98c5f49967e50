"""`opsconsole`: the command-line entry point for every front end (`opsconsole.cli.main:main`).

One module per subcommand here (console.py is the run without one). This package imports none of
them: a package that imported its modules back would make one import circle of the whole cli.
"""
