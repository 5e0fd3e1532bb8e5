"""One module per ``gpucal`` command: ``add_parser(subparsers)`` declares its flags and ``run(args)``
does the work, returning the exit code. Shared argument types live in ``gpucal.commands.args``."""
