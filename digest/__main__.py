from digest.cli import main

main(prog_name="digest")
