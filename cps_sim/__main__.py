from cps_sim.cli import main

main()
