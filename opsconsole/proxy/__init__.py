"""The embedded traffic proxy: a separate process (`opsconsole proxy`, entry `opsconsole.proxy.__main__`)
that keeps serving when the console dies.

Nothing in the console imports this package except the launcher and the config loader (for
`opsconsole.proxy.config.parse_proxy_section`). It re-exports nothing, so importing one of its modules
never pulls in the others (the package is imported first whenever a module of it is).
"""
