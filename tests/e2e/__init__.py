"""End-to-end tests on real containers and NAT routers (marked ``docker``)."""
