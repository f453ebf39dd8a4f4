"""The `twinformers` command line: `main` dispatches to one module per subcommand (`convert`, `inspect`,
`generate`, `demo`), each imported only when its subcommand runs.
"""
