"""``python -m sam_edge.formats``: the registered formats, their precisions and aliases, and
whether their toolchain is installed here."""
from sam_edge.formats import all_formats, missing_toolchain, precisions_table

print(precisions_table())
for spec in all_formats():
    lacking = missing_toolchain(spec)
    print(f"  {spec.name:11s} toolchain {', '.join(spec.toolchain) or '-'}: "
          f"{'installed' if not lacking else 'missing ' + ', '.join(lacking)}"
          f"{'' if spec.runs_here else '; its artifacts do not run on this platform'}")
