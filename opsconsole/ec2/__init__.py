"""EC2 host groups (`provider: ec2`): config, fleet operations, and their hosts in the inventory.

`opsconsole.ec2.inventory` and `opsconsole.ec2.config` import no boto3; import
`opsconsole.ec2.fleet` only where instances are really created or changed.
"""
