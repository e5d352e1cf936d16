"""An external EMS for cps-sim hil in 20 lines: charge every plugged-in EV of group 'lab'
at 3 kW, batteries on their built-in rule.  Usage: python external_controller.py HOST PORT"""

import json
import sys
import time

import paho.mqtt.client as mqtt

PREFIX = sys.argv[3] if len(sys.argv) > 3 else "cps/hil_demo"
seq = 0


def on_observation(client, userdata, msg):
    global seq
    obs = json.loads(msg.payload)
    ev_w = [3000.0 if plugged else 0.0 for plugged in obs["ev_plugged"]]
    sp = dict(v=1, seq=seq, ts=time.time(), ttl_s=300, ev_setpoint_w=ev_w, battery_mode="auto")
    client.publish(f"{PREFIX}/group/lab/setpoint", json.dumps(sp), qos=1)
    seq += 1


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)  # MQTT 3.1.1: any broker
client.on_message = on_observation
client.connect(sys.argv[1], int(sys.argv[2]))
client.subscribe(f"{PREFIX}/group/lab/observation", qos=1)
client.loop_forever()
