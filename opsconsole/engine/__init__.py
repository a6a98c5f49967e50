"""The engine: commands in, events out. Imports no UI library.

Import what you need from its modules (`opsconsole.engine.engine`, `opsconsole.engine.commands`): this
package re-exports nothing, because every module inside imports `opsconsole.engine.commands`, and a
package that imported them back would make one import circle of the whole engine.
"""
