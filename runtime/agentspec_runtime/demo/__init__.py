"""Demo pieces for local mode: small real MCP servers the examples start with `agentspec up`.

Must not: be imported by the engine, adapters or APIs; it is example infrastructure only.
"""
