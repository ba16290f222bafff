arm
